"""docproxy's benchmark against nginx and a bare Starlette route: ``python -m bench``."""
