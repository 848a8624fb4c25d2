"""semdepth core: networks, losses, geometry, data and evaluation for semantically-guided
self-supervised monocular depth (Guizilini et al., ICLR 2020). Imports no ROS package."""
__version__ = "0.1.0"
