"""The HTTP API: one router per area. `errors(...)` documents every status a route can answer (lesson 01)."""

from http import HTTPStatus

from ..models import Problem

# 503: the database did not answer or the pool's wait ran out (db.py); every route that touches the database.
UNAVAILABLE = {503: {"model": Problem, "description": "Service Unavailable: the database did not answer; see Retry-After",
                     "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}}}
UNAUTHORIZED = {401: {"model": Problem, "description": "Unauthorized: missing, invalid or expired token",
                      "headers": {"WWW-Authenticate": {"description": "Bearer, with error and error_description",
                                                       "schema": {"type": "string"}}}}}


def errors(*codes: int) -> dict[int | str, dict]:
    documented: dict[int | str, dict] = {}
    for code in codes:
        if code == 401:
            documented.update(UNAUTHORIZED)
        elif code == 503:
            documented.update(UNAVAILABLE)
        else:
            documented[code] = {"model": Problem, "description": HTTPStatus(code).phrase}
    return documented
