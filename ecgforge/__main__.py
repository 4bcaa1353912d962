"""``python -m ecgforge`` (and ``accelerate launch -m ecgforge run ...``)."""

from ecgforge.cli import main

main()
