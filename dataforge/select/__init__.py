"""Selection stages: AlpaGasus judge, CoLoR-Filter and diversity (DESIGN.md: select/)."""
