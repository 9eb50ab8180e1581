"""System tests: whole commands end to end, as a user runs them: the command line and its subprocesses, the server
over sockets and in a browser, eval and training runs, the recipes, the benchmarks and the tools that run models."""
