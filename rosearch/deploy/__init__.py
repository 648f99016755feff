"""Running a trained classifier where it is deployed: ONNX / int8 graphs checked by ONNX Runtime
(:mod:`~rosearch.deploy.onnx`) and batched text classification on either runtime
(:mod:`~rosearch.deploy.predict`, the ``rosearch predict`` command).

Depends only on :mod:`rosearch.search_space` (the student classes) and :mod:`rosearch.defense`
(a student's text preprocessing), so export and the benchmarks can build on it.
"""
