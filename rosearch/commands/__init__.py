"""What each ``rosearch`` command does, given the arguments :mod:`rosearch.cli` parsed: search, teacher and
distill (:mod:`.training`), stats, report and export (:mod:`.analysis`, :mod:`.export`,
:mod:`.export_onnx`).

Empty on purpose: :mod:`rosearch.cli` imports a command's module only when that command runs.
"""
