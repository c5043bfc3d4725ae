"""MySQL and MariaDB through aiomysql: a read-only session, backquoted names."""

from __future__ import annotations

from typing import ClassVar

from proxy.catalog.dialect import Connection, Dialect, pool_options
from proxy.catalog.pooled import PooledDatabase
from proxy.catalog.settings import CatalogConfig

# pymysql's codes for a connection that went away: 2003 cannot connect, 2006 server has gone
# away, 2013 lost connection during query, 2055 lost connection with a system error.
_CONNECTION_LOST = (2003, 2006, 2013, 2055)


class MySQL(Dialect):
    name: ClassVar[str] = "mysql"
    quote_char: ClassVar[str] = "`"

    def open(self, config: CatalogConfig) -> Connection:
        options = {
            **pool_options(config.pool),
            "connect_timeout": config.pool.connect_timeout,
            "init_command": "SET SESSION TRANSACTION READ ONLY",
        }
        return PooledDatabase(self, config, options, drop=lambda raw: raw.close())

    def connection_lost(self, exc: BaseException) -> bool:
        import pymysql

        if super().connection_lost(exc) or isinstance(exc, pymysql.err.InterfaceError):
            return True
        return (
            isinstance(exc, pymysql.err.OperationalError)
            and bool(exc.args)
            and exc.args[0] in _CONNECTION_LOST
        )
