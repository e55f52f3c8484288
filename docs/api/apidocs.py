"""
The pydoctor system that builds the API reference (see README.md here).

pydoctor's Twisted deprecation extension reads C{@deprecated(Version(...))}
from the source, and rejects this project's: it takes a major version of 0
for a missing one, and wants a package name without a dash.  This system
leaves that extension out; a deprecated name says so in its docstring.
"""

from pydoctor import extensions, model


class System(model.System):
    """pydoctor's own system, without C{pydoctor.extensions.deprecate}."""

    extensions = [  # noqa: RUF012 (pydoctor reads it as a class attribute)
        name for name in extensions.get_extensions() if name != "pydoctor.extensions.deprecate"
    ]
