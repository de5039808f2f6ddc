"""The floor under everything: the one error type, the named choices options take, opening only regular files,
signals as exceptions, and the threads the work runs on.  Imports nothing else of cnnx."""
