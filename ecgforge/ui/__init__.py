"""The user interface: rich progress bars and tables (``console``) and the Typer command line (``ecgforge.cli``)."""
