"""DDMail: ddmail_keyhandler."""
