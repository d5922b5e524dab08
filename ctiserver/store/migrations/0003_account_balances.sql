-- 0003: the balance of an account, so the IVR can read it out (balance
-- self-service) once the caller has identified with the account number.
-- Kept by whatever feeds ctiserver from the core banking or billing system;
-- NULL: not known here, and the IVR then offers an agent instead.

ALTER TABLE customer_accounts ADD COLUMN balance numeric(16, 2);
ALTER TABLE customer_accounts ADD COLUMN balance_at timestamptz;
COMMENT ON COLUMN customer_accounts.balance IS
    'The account''s balance in the centre''s currency as last reported; NULL when unknown.';
COMMENT ON COLUMN customer_accounts.balance_at IS 'When the balance was reported.';
