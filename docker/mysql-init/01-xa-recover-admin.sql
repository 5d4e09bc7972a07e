-- Run once by the mysql image on first start (docker-entrypoint-initdb.d).
-- XA RECOVER, which a two-phase-commit sink uses to find transactions it prepared before a
-- crash, needs the dynamic privilege XA_RECOVER_ADMIN in MySQL 8. Dynamic privileges are
-- global, hence ON *.*. The user itself is created by the image from MYSQL_USER.
GRANT XA_RECOVER_ADMIN ON *.* TO 'kstreamlet'@'%';
