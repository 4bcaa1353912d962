"""The application layer: what the commands do (run a recipe, evaluate a run, embed, export, report), without
the command line or any rendering (``ecgforge.ui``)."""
