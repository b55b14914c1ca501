"""Controller backends behind one interface (``base.ControllerClient``)."""
