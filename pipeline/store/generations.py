"""The Generate tab's history: one row per generation, its settings, pictures and timings."""

from typing import Any

from pipeline.store.base import StoreBase, utc_now

SECRET_MARKERS = ("key", "token", "secret", "password")
GENERATION_STATUSES = ("ok", "error")


def secret_keys(mapping: Any, prefix: str = "") -> list[str]:
    """Dotted paths of keys, at any depth, whose names look like credentials."""
    found = []
    if isinstance(mapping, dict):
        for key, value in mapping.items():
            path = f"{prefix}{key}"
            if any(marker in str(key).lower() for marker in SECRET_MARKERS):
                found.append(path)
            found += secret_keys(value, f"{path}.")
    elif isinstance(mapping, (list, tuple)):
        for index, value in enumerate(mapping):
            found += secret_keys(value, f"{prefix}{index}.")
    return found


class GenerationQueries(StoreBase):
    def record_generation(self, **fields: Any) -> int:
        """Insert one generation; dict/list fields are stored as JSON. Returns its id."""
        leaked = secret_keys(fields.get("params") or {})
        if leaked:
            raise ValueError(
                f"refusing to store params that look like secrets: {', '.join(leaked)}; "
                "pass credentials to the provider, not into the generation record"
            )
        fields.setdefault("created_at", utc_now())
        fields.setdefault("status", "ok")
        if fields["status"] not in GENERATION_STATUSES:
            raise ValueError(f"status must be one of {GENERATION_STATUSES}, got {fields['status']!r}")
        return self._insert("generations", fields)

    def get_generation(self, generation_id: int) -> dict[str, Any]:
        """The generation with JSON fields decoded; KeyError if there is none."""
        return self.get("generations", generation_id)

    def list_generations(self, limit: int = 50, offset: int = 0, search: str | None = None) -> list[dict[str, Any]]:
        """Newest first; `search` keeps prompts containing it (case-insensitive)."""
        # instr(lower(...)) rather than LIKE: no wildcard escaping, and '%' or '_' in a prompt match literally.
        where, args = ("instr(lower(prompt), lower(?)) > 0", [search]) if search else (None, [])
        return self._rows("generations", where, args, order_by="created_at desc, id desc", limit=limit, offset=offset)
