"""DDMail: ddmail_web."""
