"""User-facing errors: one line that names the problem and the fix, never a traceback."""
import argparse
import difflib
import functools
import signal
import sys


class UserError(Exception):
    """Bad input from the user (config, data, checkpoint). The message is the whole story."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass


class Stopped(Exception):
    """A run stopped on request (SIGTERM, SIGINT) after saving its state; exits 128 + signal."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def did_you_mean(word, options, prefix: str = "") -> str:
    """"; did you mean 'x'?" for the closest of `options` to a mistyped `word`, else ""."""
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean '{prefix}{match[0]}'?" if match else ""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one `error: ...` line through `cli` (not usage text and exit 2)."""

    def error(self, message):
        raise ConfigError(f"{message} (see {self.prog} --help)")


def one_line(message: str) -> str:
    """The message itself when it is one line. A DataLoader worker re-raises an error as
    "Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...\nmodule.DataError: msg":
    that gives `msg`."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if "Traceback" not in message:
        return "; ".join(lines)
    head, sep, rest = lines[-1].partition(": ")
    return rest if sep and head.replace(".", "").replace("_", "").isalnum() else lines[-1]


def out_of_memory(e: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError (CUDA) or the CPU allocator's refusal."""
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)))


def cli(main):
    """Run `main()`; a UserError prints one `error: ...` line and exits with status 2; a fault of
    the machine (file system, memory) one line and status 1; Ctrl-C `interrupted` and 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        if getattr(signal.getsignal(signal.SIGINT), "during_imports", False):  # scripts/_bootstrap.py's
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C is a KeyboardInterrupt again
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {one_line(str(e))}", file=sys.stderr)
            sys.exit(2)
        except Stopped as e:
            print(str(e), file=sys.stderr)
            sys.exit(e.code)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except OSError as e:  # what no up-front check foresaw: a full disk, permissions changed mid-run
            where = f": {e.filename}" if e.filename else ""
            print(f"error: {e.strerror or e}{where} (check free space and permissions there)", file=sys.stderr)
            sys.exit(1)
        except Exception as e:
            if not out_of_memory(e):
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            print(f"error: out of memory ({first}): lower the batch size or the number of samples",
                  file=sys.stderr)
            sys.exit(1)

    return wrapper
