"""`ftlaunch bench`: one spec across techniques (run), and its report (report). Imports core, planning
and the backend registry."""
