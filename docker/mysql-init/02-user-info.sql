-- The seed's user_info table (002, BroadcastState), read every 5 s by services.enrichment.
USE kstreamlet;
CREATE TABLE IF NOT EXISTS user_info (
  userID   VARCHAR(20) NOT NULL PRIMARY KEY,
  userName VARCHAR(20),
  userAge  INT
) DEFAULT CHARSET = utf8mb4;
INSERT INTO user_info VALUES ('user_1', '张三', 10), ('user_2', '李四', 20), ('user_3', '王五', 30), ('user_4', '赵六', 40);
