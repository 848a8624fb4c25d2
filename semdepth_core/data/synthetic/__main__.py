"""`python -m semdepth_core.data.synthetic`: generate one drive (see kitti_writer.main)."""
from .kitti_writer import main

raise SystemExit(main())
