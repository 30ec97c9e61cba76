"""The ``suitsrv`` command line."""
