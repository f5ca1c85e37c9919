"""User-facing errors: one line that names the problem and the fix, never a traceback."""
import functools
import sys


class UserError(Exception):
    """Bad input from the user (config, data, checkpoint). The message is the whole story."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass


def cli(main):
    """Run `main()`; a UserError prints one `error: ...` line and exits with status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
