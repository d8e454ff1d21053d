"""The ``taskstats`` command line: one module per subcommand, formatting kept pure."""
