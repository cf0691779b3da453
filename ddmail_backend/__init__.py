"""DDMail: ddmail_backend."""
