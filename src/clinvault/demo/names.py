"""Names for the sample platform: organizations, hospitals, people, indications, drugs and
adverse-event terms.

Realistic, deliberately international: accents and non-Latin scripts appear in names and
paths, as they do on real platforms, and must survive backup and restore unchanged.
"""

from __future__ import annotations

from typing import Final

ORGANIZATIONS: Final = (
    ("Northwind Clinical Research", "US", "America/New_York"),
    ("Helvetia BioPharma AG", "CH", "Europe/Zurich"),
    ("Hospices Civils de Lyon", "FR", "Europe/Paris"),
    ("Nordisk Forsøgscenter ApS", "DK", "Europe/Copenhagen"),
    ("Kyoto Medical Partners", "JP", "Asia/Tokyo"),
    ("Sonnenberg Klinikum GmbH", "DE", "Europe/Berlin"),
    ("Cascadia Health Sciences", "US", "America/Los_Angeles"),
    ("Instituto de Pesquisa São Paulo", "BR", "America/Sao_Paulo"),
    ("Baltic Cardiology Group", "LT", "Europe/Vilnius"),
    ("Meridian Therapeutics Ltd", "GB", "Europe/London"),
    ("Aurora Oncology Network", "CA", "America/Toronto"),
    ("Policlinico Sant'Orsola", "IT", "Europe/Rome"),
)

HOSPITALS: Final = (
    ("Charité – Universitätsmedizin Berlin", "Berlin", "DE"),  # noqa: RUF001 (real name)
    ("Hôpital Européen Georges-Pompidou", "Paris", "FR"),
    ("Karolinska Universitetssjukhuset", "Stockholm", "SE"),
    ("Massachusetts General Hospital", "Boston", "US"),
    ("Hospital Clínic de Barcelona", "Barcelona", "ES"),
    ("Rigshospitalet", "København", "DK"),
    ("Universitätsspital Zürich", "Zürich", "CH"),
    ("St Thomas' Hospital", "London", "GB"),
    ("Toronto General Hospital", "Toronto", "CA"),
    ("Osaka University Hospital", "Osaka", "JP"),
    ("Hospital Israelita Albert Einstein", "São Paulo", "BR"),
    ("Uniwersyteckie Centrum Kliniczne", "Gdańsk", "PL"),
    ("AZ Sint-Jan Brugge", "Brugge", "BE"),
    ("Mayo Clinic", "Rochester", "US"),
    ("Royal Melbourne Hospital", "Melbourne", "AU"),
    ("Vilniaus universiteto ligoninė Santaros klinikos", "Vilnius", "LT"),
)

FIRST_NAMES: Final = (
    "Anaïs", "Björn", "Chiara", "David", "Elif", "François", "Grace", "Hiroshi", "Ingrid",
    "José", "Katarzyna", "Liam", "Maria", "Nikolaj", "Olivia", "Paulo", "Quentin", "Rania",
    "Søren", "Thomas", "Umar", "Valentina", "Wei", "Yuki", "Zoë", "Emma", "Lukas", "Sofia",
)  # fmt: skip

LAST_NAMES: Final = (
    "Müller", "Lefèvre", "García", "Nakamura", "Johansson", "O'Brien", "Rossi", "Kowalski",
    "Smith", "Nguyen", "Jørgensen", "Silva", "Dubois", "Schmidt", "Chen", "Ødegaard",
    "Fernández", "Brown", "Novák", "Yılmaz", "Kim", "Andersson", "Papadopoulos", "Taylor",  # noqa: RUF001
)  # fmt: skip

INDICATIONS: Final = (
    ("Oncology", "Non-Small Cell Lung Cancer"),
    ("Oncology", "HER2-Positive Breast Cancer"),
    ("Cardiology", "Heart Failure with Reduced Ejection Fraction"),
    ("Endocrinology", "Type 2 Diabetes Mellitus"),
    ("Neurology", "Relapsing Multiple Sclerosis"),
    ("Immunology", "Moderate-to-Severe Plaque Psoriasis"),
    ("Infectious Disease", "Community-Acquired Pneumonia"),
    ("Hepatology", "Non-Alcoholic Steatohepatitis"),
    ("Nephrology", "Chronic Kidney Disease"),
    ("Rheumatology", "Rheumatoid Arthritis"),
    ("Psychiatry", "Treatment-Resistant Depression"),
)

DRUG_PREFIXES: Final = ("zan", "vel", "tor", "mir", "ela", "qui", "dor", "sab")
DRUG_STEMS: Final = ("ubrafenib", "otinib", "imab", "ciclib", "afilcept", "tegravir", "glutide")

# MedDRA preferred terms with their codes.
ADVERSE_EVENT_TERMS: Final = (
    ("Headache", "10019211"),
    ("Nausea", "10028813"),
    ("Fatigue", "10016256"),
    ("Diarrhoea", "10012735"),
    ("Dizziness", "10013573"),
    ("Rash", "10037844"),
    ("Arthralgia", "10003239"),
    ("Nasopharyngitis", "10028810"),
    ("Vomiting", "10047700"),
    ("Pyrexia", "10037660"),
    ("Cough", "10011224"),
    ("Insomnia", "10022437"),
    ("Hypertension", "10020772"),
    ("Back pain", "10003988"),
    ("Anaemia", "10002034"),
    ("Alanine aminotransferase increased", "10001551"),
    ("Neutropenia", "10029354"),
    ("Pneumonia", "10035664"),
    ("Atrial fibrillation", "10003658"),
    ("Injection site reaction", "10022095"),
)
