"""The student network, laid out like a ``transformers/models/<name>/`` package.

* :mod:`.configuration`: :class:`StudentConfig`, the HF config that carries the genome;
* :mod:`.modeling`: the student models and :func:`register_auto_classes`;
* :mod:`.ops`: the operations a cell node can apply.

The genome that describes an architecture (and its sampling, labels and analytic cost) stays in
:mod:`rosearch.search_space`, which never imports this package. This ``__init__`` imports
nothing, so the search-space modules stay importable without torch.
"""
