"""The `tinygpt` command's entry point (and `python -m tinygpt`).

It imports the commands itself, so that a Ctrl-C while Python is still importing them (about
half a second after start) exits quietly, with status 130, like a Ctrl-C at any later moment,
instead of printing a KeyboardInterrupt traceback from somewhere inside an import."""
import signal
import sys


def run():
    def interrupted(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)       # a second press changes nothing
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    previous = signal.signal(signal.SIGINT, interrupted)
    from tinygpt.cli import main
    signal.signal(signal.SIGINT, previous)
    main(prog_name="tinygpt")


if __name__ == "__main__":
    run()
