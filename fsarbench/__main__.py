"""``python -m fsarbench``."""

from fsarbench.cli.main import main

if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:  # a Ctrl-C after the command's own handler returned
        code = 130
    raise SystemExit(code)
