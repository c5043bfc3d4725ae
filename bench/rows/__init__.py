"""The benchmark's rows: one module per group of rows that share their measurements, each
declaring a ``GROUP`` (``bench.rows.base.RowGroup``), listed in ``bench.rows.registry``."""
