"""The studies of the original notebooks, each runnable as `python -m experiments.<name>`."""
