"""Content templates: catalog (data files), rendering and i18n."""
