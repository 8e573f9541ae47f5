"""Operations over a whole project: lookups, feature vectors, exports, materialisation,
verification, key rotation, reveal and policy suggestion. They sit above
:class:`fabric.project.Project` and below the adapters (:mod:`fabric.api`, :mod:`fabric.cli`).
"""
