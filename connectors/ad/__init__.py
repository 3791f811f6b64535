"""Active Directory readers: DirSync and uSNChanged polling, change notifications, the scope they
share, and AD's attribute values."""
