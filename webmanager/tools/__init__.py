"""The operator's tooling: the `tandem` command line, the Python client, the demo, the local process launcher and the pytest fixtures."""
