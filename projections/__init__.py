"""Read models built from the event log (visibility), and the queries over them."""
