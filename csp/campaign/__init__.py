"""The campaign engine: the SQLite store, the MPI task farm and the pipeline of a search."""
