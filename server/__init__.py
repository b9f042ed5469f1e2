"""The parameter-server daemon: owns the model, the shared RMSProp statistics and the global frame counter T."""
