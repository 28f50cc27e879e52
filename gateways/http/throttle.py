"""Login throttling: failed logins are counted per account and per client address in Redis over
a window; past the limit, login answers 429 with `Retry-After` until the window ends. A success
clears the account's count. Redis is only a transport here too: if it is unreachable, logins are
not throttled (logged), rather than refused. Imported by the identity routes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateways.http.errors import ApiError
from infra.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class LoginThrottle:
    redis: Redis
    settings: Settings

    def _keys(self, email: str, address: str) -> list[tuple[str, int]]:
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
        s = self.settings
        return [
            (s.key(f"login-failures:account:{account}"), s.login_failures_per_account),
            (s.key(f"login-failures:address:{address}"), s.login_failures_per_address),
        ]

    async def check(self, email: str, address: str) -> None:
        """429 `too_many_attempts` (with Retry-After) if the account or address is locked."""
        try:
            for key, limit in self._keys(email, address):
                failures = int(await self.redis.get(key) or 0)
                if failures >= limit:
                    retry_after = max(int(await self.redis.ttl(key)), 1)
                    raise ApiError(
                        429,
                        "too_many_attempts",
                        "too many failed logins; try again later",
                        headers={"Retry-After": str(retry_after)},
                    )
        except RedisError:
            log.warning("login throttle unavailable (redis)")

    async def failed(self, email: str, address: str) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, _ in self._keys(email, address):
                    pipe.incr(key)
                    pipe.expire(key, self.settings.login_window_s, nx=True)
                await pipe.execute()
        except RedisError:
            log.warning("login throttle unavailable (redis)")

    async def succeeded(self, email: str, address: str) -> None:
        try:
            await self.redis.delete(self._keys(email, address)[0][0])
        except RedisError:
            log.warning("login throttle unavailable (redis)")
