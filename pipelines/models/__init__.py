"""Model factories that the recipes in ``pipelines/`` load by ``factory: models.<module>:<name>``
(a recipe's folder comes first on sys.path, which makes this folder the ``models`` package)."""
