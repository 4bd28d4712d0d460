"""The article's app_sup: one_for_one over kv_store and kv_logger, intensity 5 in 10 s.

    sup = AppSup.start_link(1.0, name="app_sup")   # the logger's interval in seconds
"""
from __future__ import annotations

import otp
from workers.kv_logger import KVLogger
from workers.kv_store import NAME as KV_STORE, KVStore


class AppSup(otp.Supervisor):
    def init(self, log_interval: float = 5.0):
        return otp.SupFlags(strategy="one_for_one", intensity=5, period=10), [
            otp.child_spec("kv_store", KVStore, name=KV_STORE),
            otp.child_spec("kv_logger", KVLogger, args=(log_interval, KV_STORE)),
        ]
