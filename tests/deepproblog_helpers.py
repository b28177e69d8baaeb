"""Helpers shared by the tests that drive DeepProbLog's own API."""

from __future__ import annotations

from deepproblog.dataset import Dataset
from deepproblog.query import Query


class QueryList(Dataset):
    """A DeepProbLog ``Dataset`` of ready-made queries."""

    def __init__(self, queries: list[Query]) -> None:
        self.queries = queries

    def __len__(self) -> int:
        return len(self.queries)

    def to_query(self, i: int) -> Query:
        return self.queries[i]
