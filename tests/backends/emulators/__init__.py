"""Local emulators of cloud wire APIs for backend tests, each started on 127.0.0.1 by the test that needs it."""
