"""The OPC UA Machine Vision companion specification (OPC 40100-1) information model, vendored.

`Opc.Ua.MachineVision.NodeSet2.xml` is the official NodeSet (version 1.0.0, 2019-07-11) published
by the OPC Foundation under its MIT license (kept in the file's header); `..NodeIds.csv` lists its
NodeIds. The server loads the NodeSet with asyncua's `import_xml`; no type is copied by hand.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

NAMESPACE_URI = "http://opcfoundation.org/UA/MachineVision"

# NodeIds (numeric, in NAMESPACE_URI) of the NodeSet's types used by the server; from the CSV
VISION_SYSTEM_TYPE = 1003
RESULT_READY_EVENT_TYPE = 1024


def nodeset_path() -> Path:
    """The vendored NodeSet XML (a real file: the package is installed unzipped)."""
    return Path(str(resources.files(__package__).joinpath("Opc.Ua.MachineVision.NodeSet2.xml")))


def nodeid_table() -> dict[str, int]:
    """Symbolic name -> numeric id of every node of the namespace (from the vendored CSV)."""
    text = resources.files(__package__).joinpath("Opc.Ua.MachineVision.NodeIds.csv").read_text(encoding="utf-8")
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.strip().split(",")
        if len(parts) == 3 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out
