"""``python -m engine`` runs the command line."""

from engine.cli import main

if __name__ == "__main__":
    main()
