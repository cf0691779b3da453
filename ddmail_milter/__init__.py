"""DDMail's submission milter: header sender ownership and per-login send limits."""
