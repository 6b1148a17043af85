from __future__ import annotations

from django.urls import path

from smsdemo import views

urlpatterns = [
    path("sms/send", views.send_code),  # guarded by the middleware (SMSGUARD["ROUTES"]): POST, else 405
    path("v2/sms/send", views.send_code_v2),  # guarded by @protect, an async view
    path("sms/verify", views.verify),  # the middleware checks the code: POST, else 405
    path("sms/outbox", views.outbox),
]
