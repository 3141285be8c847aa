"""Redis, Debian's ``redis-server``, on loopback as the online feature store."""

from __future__ import annotations

import shutil
from pathlib import Path

from integration._service import Service
from integration._settings import StackSettings
from integration.errors import StackError


class Redis(Service):
    """One Redis server bound to 127.0.0.1, no persistence, data folder under the run folder."""

    name = "redis"
    ready_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, settings: StackSettings) -> None:
        super().__init__(settings)
        self.conf_path = settings.conf_dir / "redis.conf"
        self.data_dir = settings.data_dir / "redis"

    @property
    def ports(self) -> list[int]:
        return [self.settings.redis_port]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.redis_port}"

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"

    @property
    def marker(self) -> str:
        # Redis rewrites its process title; the template below keeps the config path in it.
        return str(self.conf_path)

    def config(self) -> str:
        lines = [
            "# Written by integration/stack.py on every start; edit the code, not this file.",
            "bind 127.0.0.1",
            f"port {self.settings.redis_port}",
            "protected-mode yes",
            "daemonize no",
            'logfile ""',
            f'dir "{self.data_dir}"',
            'save ""',
            "appendonly no",
            'proc-title-template "{title} {listen-addr} {config-file}"',
        ]
        return "\n".join(lines) + "\n"

    def prepare(self) -> None:
        self.conf_path.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config())

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if binary is None:
            raise StackError(
                "redis-server is not installed: run `./dev setup` (or `apt-get install redis-server`)"
            )
        return [binary, str(self.conf_path)]

    def healthy(self) -> bool:
        import redis

        client = redis.Redis(
            host="127.0.0.1", port=self.settings.redis_port, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()
