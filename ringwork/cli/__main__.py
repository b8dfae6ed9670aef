"""``python -m ringwork.cli``: what tests, ``ringwork run`` and the demo spawn workers with."""

from ringwork.cli import main

main()
