module kstreamlet/bench/http_service_go

go 1.21
