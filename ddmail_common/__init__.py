"""DDMail: ddmail_common."""
