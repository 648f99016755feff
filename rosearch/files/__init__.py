"""Where rosearch reads and writes on disk: the run directory (:mod:`.rundir`), a command's output paths
(:mod:`.outputs`), model directories (:mod:`.model_paths`, :mod:`.model_files`), directories shipped to
workers as bytes (:mod:`.shipped_files`, :mod:`.tokenizer_files`) and the content-keyed caches
(:mod:`.cache`).

Standard library only, so the command line can check paths before it imports any heavy library.
"""
