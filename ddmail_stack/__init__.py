"""DDMail: ddmail_stack."""
