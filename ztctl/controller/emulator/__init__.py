"""A loopback emulator of ``zerotier-one``'s network controller API.

``ControllerEmulator`` serves the local API of a 1.14.1 node (or of another
release, see ``ApiFlavour``) from memory, and ``Fault`` describes failures a
test can inject. ``CentralEmulator`` serves ZeroTier Central's API the same
way. ``ztctl demo`` and the test suite use them in place of a real
controller. A conformance test replays the recordings of a real 1.14.1
controller against it.
"""

from .central_emulator import CentralEmulator
from .controller_emulator import ControllerEmulator
from .faults import Fault
from .flavour import ApiFlavour
from .server import RecordedRequest

__all__ = ["ApiFlavour", "CentralEmulator", "ControllerEmulator", "Fault", "RecordedRequest"]
