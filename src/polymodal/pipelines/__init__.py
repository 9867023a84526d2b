"""polymodal.pipelines (later issues)."""
