"""The model registry (``promote.registry_dir``, default ``models/registry/``) and champion /
challenger promotion.

- :mod:`.settings`: the ``promote:`` section of params.yaml;
- :mod:`.store`: the on-disk registry: self-contained version directories ``v0001/`` …, the
  ``production`` pointer and the ``registry.json`` index with the decision history; every write is
  atomic (temporary sibling + rename), so a killed process never leaves ``production`` naming a
  half-written version;
- :mod:`.rows`: the champion scored on the challenger's test rows, through the champion's own
  vocabularies;
- :mod:`.promote`: the rule (candidate, gates, AUC drop), :func:`~.promote.promote` and
  :func:`~.promote.rollback`.

Kept import-light: components/config.py imports :mod:`.settings`.
"""
